"""Loading models and tokenizers: hub ids, local folders, the bundled GGUF model."""
