"""One series from stored files to SEG + SC on disk (``pipeline``), and the job that runs it (``job``)."""
