"""The prompts the policy sees: the paper's templates, a shorter profile for small models, and the chat formatting around them."""
