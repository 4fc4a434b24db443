# Easel's everyday commands; each delegates to cargo or cargo xtask (see README.md).

# Build the browser client and start the server on http://127.0.0.1:8080
run *FLAGS:
    cargo xtask run {{FLAGS}}

# Install what is missing, then run every test layer (lint, Rust, browser)
test:
    cargo xtask test

# Build the browser client into dist/
dist:
    cargo xtask dist

# rustfmt check and clippy -D warnings, native and wasm32
lint:
    cargo xtask lint

# Format all code
fmt:
    cargo fmt --all
