"""hfcache: a Hugging Face Hub-compatible cache and download manager.

The cache it writes is exactly the one `huggingface_hub` writes; what it adds is checking (every blob's hash is
verified before it becomes visible), speed, auditing and offline transport.
"""

__version__ = "0.1.0"
