"""Online learners (River, plus our own where River is slow or missing) and model snapshots."""
