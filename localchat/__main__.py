from localchat.cli import main

if __name__ == "__main__":  # guarded: a spawned child process may import this module
    raise SystemExit(main())
