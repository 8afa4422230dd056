package schemas

// PartitionField is the DATE column the user_bindings table is partitioned
// by: one partition per snapshot, replaced as a whole when it is published.
const PartitionField = ColSnapshotDate

// ClusterFields are the clustering columns of the user_bindings table, in
// order; queries by service and user read only the blocks they need.
var ClusterFields = []string{ColServiceSID, ColUserSID}
