"""Pair comparisons: one image against another (or against each image of a set).

* :mod:`.pixel` -- pixel distances (sum and mean of absolute differences, MSE, PSNR, SSIM);
* :mod:`.compare` -- pixel and feature distances of a pair (:func:`~.compare.compare`);
* :mod:`.perturbations` -- distance against shift, noise and blur (``imgdist robustness``);
* :mod:`.demo` -- ``imgdist demo``: the lecture's point, measured on built-in photos.
"""
