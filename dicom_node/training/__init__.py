"""Training the brain DeepLabv3+: cases (data), augmentation, the loop, metrics and curves."""
