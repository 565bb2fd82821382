"""tc-treeherder's jobs ingester for Treeherder: a jobs exchange in, jobs in Treeherder's database out.

It runs inside a Treeherder deployment (Treeherder's Python, packages and settings) and stands alone: it
imports nothing of tc-treeherder. See docs/treeherder.md.
"""
