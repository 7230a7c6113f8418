"""llama.cpp in the worker process. `bindings` is the one module that imports llama_cpp; `ggml` binds
ggml's device and buffer-type C API; `model` holds a loaded model and its decode loop; `selftest` and
`buildinfo` answer the worker's --amx-selftest and --build-info. Importing this package imports nothing.
"""
