"""Tools for developing and testing tc-treeherder without a real Taskcluster deployment."""
