"""The LightningCLI that turns configs into a run: ``HarvestCLI`` and what it decides before classes are built."""
