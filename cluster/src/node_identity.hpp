// Which machine, and which /dev/shm, a rank sees: ranks whose /dev/shm is the same share blocks
// by name, and nothing needs replicating between them.
#pragma once

#include <string>

namespace shmpool::cluster {

/// The kernel's boot id with the device and inode of /dev/shm: equal for two processes exactly
/// when a block one creates is the block the other attaches.
std::string shm_identity();
/// The machine's name, for messages.
std::string host_name();

}  // namespace shmpool::cluster
