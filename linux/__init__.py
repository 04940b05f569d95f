"""What both of pyctr's processes call the kernel with: the C library through ``_ctypes``
(``libc``), the system calls Python's ``os`` lacks (``syscalls``), and ``signal``/``socket``
without their enum wrappers (``cmodules``). Stdlib only: the init imports it before the root
changes, and the CLI before it forks the init."""
