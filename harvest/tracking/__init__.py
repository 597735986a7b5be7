"""What trackers need to know about a run (resolved config, code version, name) and Harvest's logger classes."""
