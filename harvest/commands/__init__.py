"""Every ``harvest`` command: parse, call a service, print; nothing else."""
