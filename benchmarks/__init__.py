"""`make bench`: the function's figures as ratios against baselines measured side by side in the same run."""
