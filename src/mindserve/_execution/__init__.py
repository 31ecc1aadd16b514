"""Where and how one batch is computed: the executor seam, in-process executors, MindSpore."""
