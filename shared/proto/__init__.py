"""Generated gRPC stubs for the public contract (protos/llada/serve/v1). Regenerate with
``python protos/generate.py``; never edit the generated files by hand."""
