// Making a directory entry durable: after a file is created or renamed, the directory holding it is
// fsync'd, or a power cut can lose the name even though the file's bytes reached the disk.
#pragma once

#include <filesystem>

namespace cpd {

// fsync(2) on the directory; false (errno set) when it cannot be opened or synced.
bool fsync_directory(const std::filesystem::path& dir);

}  // namespace cpd
