"""The feature-discovery web UI (`featsync ui`, `featsync serve --ui`): catalog, feature view,
feature service and health pages, server-rendered, with every asset in this package."""
