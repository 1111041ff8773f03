"""Model loading, the one training loop, and run_trial."""
