"""Image builders that write a Yocto-style qemuboot.conf next to their output."""
