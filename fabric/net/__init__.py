"""The host: namespaces, links, the userspace link engine, lifecycle, doctor."""
