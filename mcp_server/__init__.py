"""mcp-code-tools: an MCP server for code analysis and test running."""

__version__ = "0.1.0"
