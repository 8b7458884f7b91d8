/*
 * Logging to stderr with levels. Every line is formatted in full and written
 * with one write(2), so lines from different threads never interleave.
 * Debug calls cost one comparison when debug logging is off.
 */
#ifndef PGBERTH_LOG_H
#define PGBERTH_LOG_H

#include <stdatomic.h>

enum log_level {
	LOG_DEBUG,
	LOG_INFO,
	LOG_WARN,
	LOG_ERROR,
};

extern atomic_int log_min_level;

void log_set_level(enum log_level level);
const char *log_level_name(enum log_level level);
/* Parses "debug", "info", "warning"/"warn", "error"; returns -1 if unknown. */
int log_level_parse(const char *s);
void log_msg(enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define log_enabled(l) (atomic_load_explicit(&log_min_level, memory_order_relaxed) <= (int)(l))
#define log_debug(...) do { if (log_enabled(LOG_DEBUG)) log_msg(LOG_DEBUG, __VA_ARGS__); } while (0)
#define log_info(...)  do { if (log_enabled(LOG_INFO)) log_msg(LOG_INFO, __VA_ARGS__); } while (0)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
