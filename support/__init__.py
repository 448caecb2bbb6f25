"""What the tests, the reliability suite (``reliability/``) and the benchmarks (``benchmarks/``) share, and
nothing shipped uses: factories of real adapter folders as PEFT writes them (``factories``, and a tiny
Llama with real PEFT adapters in ``tiny_llama``), stand-ins for remote services the tests cannot reach
(``standins``: the Hugging Face Hub, and a threaded uvicorn server to run them), the stack of real
processes that the reliability suite kills and restarts (``stack.ProcessStack``), and the literal
reference implementations that optimized kernels are checked against (``references``). It imports the
product packages only, never ``tests`` or ``reliability``; it is not part of the installed package."""
