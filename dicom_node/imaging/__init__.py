"""The imaging core: load MR series, segment the brain with DeepLabv3+, pseudocolor it (paper, 3.1 and 3.4).

Modules: ``loading`` (DICOM -> one sorted volume, with notes), ``mosaic`` (Siemens mosaics),
``plausibility`` (the no-brain gate before export), ``normalize`` (intensities, network-size letterbox),
``network`` (DeepLabV3Plus and weights files), ``segmenter`` (cached, batched inference),
``postprocess`` (largest 3D component, holes, no-brain), ``pseudocolor`` (49-bin LUT),
``preview`` (overlay PNG), ``training`` (a minimal fit loop shared with the trainer).
"""
