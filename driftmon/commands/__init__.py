"""The command line's commands, one module per group; ``driftmon.cli`` assembles them."""
