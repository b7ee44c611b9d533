"""What a node runs when it joins a pool: runtime specs -> start-task script."""
