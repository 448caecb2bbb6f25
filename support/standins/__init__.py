"""Local servers that speak the protocols of services tests cannot reach (the Hugging Face Hub)."""
