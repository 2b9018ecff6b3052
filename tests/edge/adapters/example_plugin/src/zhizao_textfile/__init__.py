"""Example zhizao adapter: a device that publishes its values by rewriting a text file of `key value` lines."""

from zhizao_textfile.adapter import TextFileAdapter
from zhizao_textfile.config import TextFileConfig

__all__ = ["TextFileAdapter", "TextFileConfig"]
