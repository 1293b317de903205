"""The autotuner: config spaces, cost model, search, measurer, schedule database."""
