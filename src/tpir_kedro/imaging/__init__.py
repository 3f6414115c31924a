"""Image side of the data: patch geometry at physical scale, tiling, the memory-mapped patch store."""
