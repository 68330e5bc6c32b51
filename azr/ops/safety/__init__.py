"""Safety monitoring of the policy's reasoning: rule scan and an optional judge."""
