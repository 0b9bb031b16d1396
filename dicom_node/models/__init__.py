"""Models: the shipped weights (``shipped``), the registry of versions (``registry``), expert masks
(``expert_masks``) and retraining rounds (``retraining``)."""
