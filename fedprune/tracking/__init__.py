"""MLflow tracking, run comparison and plots."""
