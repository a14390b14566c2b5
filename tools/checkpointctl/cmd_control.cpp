// Placeholder: filled in by its owner.
#include "tools/checkpointctl/commands.h"

namespace cpd::ctl {

std::vector<Command> add_control_commands(CLI::App& /*app*/) { return {}; }

}  // namespace cpd::ctl
