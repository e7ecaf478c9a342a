"""The recipe in the plant's words: zones on the part, rules that decide, the sentence."""
