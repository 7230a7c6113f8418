"""Start-up: wall time of `python -m localchat --help` and which heavy libraries it imported (none wanted).

    scripts/bench startup [--repeat 10] [--json [OUT.json]]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import benchlib  # noqa: E402

HEAVY = ("llama_cpp", "textual", "huggingface_hub", "modelscope", "fastapi", "uvicorn")


def main(argv: list[str] | None = None) -> int:
    p = benchlib.parser("scripts/bench startup", __doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=10)
    args = benchlib.parse_args(p, argv)
    home = tempfile.mkdtemp(prefix="localchat-bench-startup-")
    cmd = [sys.executable, "-m", "localchat", "--home", home, "--help"]
    subprocess.run(cmd, cwd=ROOT, capture_output=True, check=True)  # warm the page cache and .pyc files
    times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, capture_output=True, check=True)
        times.append(time.perf_counter() - t)
    bare = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], capture_output=True, check=True)
        bare.append(time.perf_counter() - t)
    probe = ("import sys, runpy\nsys.argv=['localchat','--home',sys.argv[1],'--help']\n"
             "try: runpy.run_module('localchat', run_name='__main__')\nexcept SystemExit: pass\n"
             f"print('\\nHEAVY:'+' '.join(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))")
    out = subprocess.run([sys.executable, "-c", probe, home], cwd=ROOT, capture_output=True, text=True, check=True)
    heavy = out.stdout.rsplit("HEAVY:", 1)[-1].split()
    figures = {"help_s_median": benchlib.median(times), "help_s_min": min(times),
               "python_bare_s_median": benchlib.median(bare), "heavy_imports": heavy}
    print(f"localchat --help  median {figures['help_s_median'] * 1000:.0f} ms  min {figures['help_s_min'] * 1000:.0f} ms "
          f"(target < 300 ms; a bare python -c pass: {figures['python_bare_s_median'] * 1000:.0f} ms)")
    print(f"heavy libraries imported: {', '.join(heavy) or 'none'}")
    benchlib.emit(args, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
