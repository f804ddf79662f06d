"""The offline demo: a customer-support agent on the scripted model."""
