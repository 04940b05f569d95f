"""The OCI runtime spec as pyctr's one description of a container."""
