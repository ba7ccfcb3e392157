# mor_git_revision(DIR OUT_REV OUT_GIT_DIR): the git revision of the checkout holding DIR, as
# "<12 hex digits>", "<12 hex digits>-dirty" (tracked files with uncommitted changes) or "unknown"
# (no git, or DIR is not in a git checkout); OUT_GIT_DIR: its absolute .git directory ("" if none).
# In script mode (cmake -DDIR=... -P GitRevision.cmake) it prints the revision: the tests use that.
function(mor_git_revision dir out_rev out_git_dir)
  set(rev "unknown")
  set(git_dir "")
  find_package(Git QUIET)
  if(GIT_FOUND)
    execute_process(COMMAND ${GIT_EXECUTABLE} rev-parse --short=12 HEAD WORKING_DIRECTORY "${dir}"
                    RESULT_VARIABLE rc OUTPUT_VARIABLE out OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
    if(rc EQUAL 0 AND out MATCHES "^[0-9a-f]+$")
      set(rev "${out}")
      execute_process(COMMAND ${GIT_EXECUTABLE} status --porcelain --untracked-files=no WORKING_DIRECTORY "${dir}"
                      OUTPUT_VARIABLE dirty OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
      if(dirty)
        string(APPEND rev "-dirty")
      endif()
      execute_process(COMMAND ${GIT_EXECUTABLE} rev-parse --absolute-git-dir WORKING_DIRECTORY "${dir}"
                      OUTPUT_VARIABLE git_dir OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
    endif()
  endif()
  set(${out_rev} "${rev}" PARENT_SCOPE)
  set(${out_git_dir} "${git_dir}" PARENT_SCOPE)
endfunction()

if(CMAKE_SCRIPT_MODE_FILE STREQUAL CMAKE_CURRENT_LIST_FILE)
  mor_git_revision("${DIR}" rev git_dir)
  execute_process(COMMAND ${CMAKE_COMMAND} -E echo "${rev}")
endif()
