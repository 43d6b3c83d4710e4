# Writes a help2man --include file with a COMMANDS section made of each subcommand's --help,
# so that the man page of a program with subcommands shows their options too:
#   cmake -DPROGRAM=path/to/azkms -DSUBCOMMANDS="detect;token" -DOUTPUT=file -P <this file>
get_filename_component(name "${PROGRAM}" NAME)
set(text "[COMMANDS]\n")
foreach(subcommand IN LISTS SUBCOMMANDS)
  execute_process(COMMAND "${PROGRAM}" ${subcommand} --help
                  OUTPUT_VARIABLE help RESULT_VARIABLE status)
  if(NOT status EQUAL 0)
    message(FATAL_ERROR "${PROGRAM} ${subcommand} --help failed: ${status}")
  endif()
  string(REPLACE "${PROGRAM}" "${name}" help "${help}")
  string(REPLACE "\\" "\\e" help "${help}")
  # A line starting with . or ' would be a troff request.
  string(REGEX REPLACE "(^|\n)([.'])" "\\1\\\\&\\2" help "${help}")
  string(APPEND text ".SS \"${name} ${subcommand}\"\n.nf\n${help}\n.fi\n")
endforeach()
file(WRITE "${OUTPUT}" "${text}")
