"""The access model the gateway owns: who may read, write and list what under the root, and its audit."""
