"""What lacy writes: atomic files and folders, folders it owns, checkpoints, Hugging Face exports, TensorBoard."""
