"""Twin: versions, building and updating a patient twin."""
