"""The robust attractor system on MNIST (issue 13): protocol -> run -> tables -> report."""
