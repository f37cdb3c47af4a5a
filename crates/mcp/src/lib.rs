//! chaperone-mcp
