"""merge_core: exact, fast LoRA merging (DO-Merging and baselines) in pure PyTorch.

No web, queue or Hub imports live here (CI enforces it); the service and the CLI build on this API.
"""

__version__ = "0.1.0"
