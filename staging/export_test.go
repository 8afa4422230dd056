package staging

// Exported for the external tests of package staging (package
// staging_test), which cannot reach unexported names.

// FilesOnDisk lists the files under the root of d, slash-separated and
// relative to the root, hidden ones included.
var FilesOnDisk = filesOnDisk
