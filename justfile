# kiln's everyday commands. `just --list` shows them.

# Run the tests (installs the validators they use).
test *args:
    scripts/test {{args}}

# The main job on the demo cluster.
demo:
    scripts/demo

# Format and lint.
lint:
    cargo fmt --check
    cargo clippy --all-targets -- -D warnings

# Accept changed snapshots after reviewing the diff (`git diff tests/snapshots`).
snapshots:
    INSTA_UPDATE=always cargo test

# Benchmarks against the named peers: `just bench fetch`.
bench what="fetch":
    cargo bench --bench {{what}}
