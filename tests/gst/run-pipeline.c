/* vstest-gst-run: runs a gst-launch style pipeline to EOS or error, then prints the element
 * properties asked for (counters such as s.copied-buffers), so the pipeline tests and the
 * benchmarks can read a sink's counters, which gst-launch-1.0 cannot print.
 *
 * usage: vstest-gst-run [--timeout S] [--print ELEMENT.PROPERTY]... [--time]
 *                       [--trace ELEMENT.PAD] 'PIPELINE'
 * exit:  0 EOS, 1 error (message on stderr), 2 timeout, 3 bad arguments or pipeline.
 * Prints "started" once the pipeline was set to PLAYING (the signal handlers are in place).
 * SIGINT/SIGTERM send EOS (like gst-launch-1.0 -e); a second one quits at once. SIGUSR1
 * prints the --print properties at once (a snapshot; the last lines printed are the final).
 * --trace prints, for each buffer through the pad, where its bytes are:
 *     buffer PTS DEV:INODE@FILEOFFSET+SIZE...     (one field per memory; PTS in ns or -1)
 * the file and offset of the shared mapping each memory maps to, from /proc/self/maps
 * ("private+SIZE": not in a shared file mapping). Two processes that print the same field
 * for a buffer see the same bytes of the same file: the buffer was not copied between them.
 *     video PTS FORMAT WIDTHxHEIGHT OFFSET/STRIDE...  (its GstVideoMeta, if any: the layout)
 * And "caps CAPS" for each caps event through the pad. */
#include <gst/gst.h>
#include <gst/video/gstvideometa.h> /* the struct only: no libgstvideo needed */
#include <glib-unix.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { EXIT_EOS = 0, EXIT_ERROR = 1, EXIT_TIMEOUT = 2, EXIT_USAGE = 3 };

typedef struct {
    GMainLoop *loop;
    GstElement *pipeline;
    int status;
    guint signals;
    GPtrArray *prints;
} Run;

/* ---- --trace: which file, and where in it, a buffer's bytes are ---- */

typedef struct {
    guintptr start, end;
    guint64 offset, inode;
    char dev[16];
} Mapping;

static GMutex maps_lock;
static GArray *maps; /* Mapping: the shared file mappings of this process */

static void read_maps(void)
{
    g_array_set_size(maps, 0);
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return;
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        Mapping m;
        char perms[8];
        unsigned long start, end, offset, inode;
        if (sscanf(line, "%lx-%lx %7s %lx %15s %lu", &start, &end, perms, &offset, m.dev, &inode) != 6 ||
            inode == 0 || perms[3] != 's')
            continue;
        m.start = start;
        m.end = end;
        m.offset = offset;
        m.inode = inode;
        g_array_append_val(maps, m);
    }
    fclose(f);
}

static const Mapping *find_mapping(guintptr p)
{
    for (guint i = 0; i < maps->len; i++) {
        const Mapping *m = &g_array_index(maps, Mapping, i);
        if (p >= m->start && p < m->end)
            return m;
    }
    return NULL;
}

/* DEV:INODE@FILEOFFSET+SIZE for a memory, or private+SIZE. */
static void describe_memory(GString *out, GstMemory *mem)
{
    GstMapInfo map;
    if (!gst_memory_map(mem, &map, GST_MAP_READ)) {
        g_string_append_printf(out, " unmappable+%" G_GSIZE_FORMAT, mem->size);
        return;
    }
    guintptr p = (guintptr)map.data;
    g_mutex_lock(&maps_lock);
    const Mapping *m = find_mapping(p);
    if (!m) { /* mapped since we last looked */
        read_maps();
        m = find_mapping(p);
    }
    if (m)
        g_string_append_printf(out, " %s:%" G_GUINT64_FORMAT "@%" G_GUINT64_FORMAT "+%" G_GSIZE_FORMAT,
                               m->dev, m->inode, m->offset + (p - m->start), map.size);
    else
        g_string_append_printf(out, " private+%" G_GSIZE_FORMAT, map.size);
    g_mutex_unlock(&maps_lock);
    gst_memory_unmap(mem, &map);
}

static GstPadProbeReturn on_trace(GstPad *pad, GstPadProbeInfo *info, gpointer data)
{
    (void)pad;
    (void)data;
    GString *line = g_string_new(NULL);
    if (info->type & GST_PAD_PROBE_TYPE_BUFFER) {
        GstBuffer *buf = GST_PAD_PROBE_INFO_BUFFER(info); /* no ref taken: a sink may need it unshared */
        GstClockTime pts = GST_BUFFER_PTS(buf);
        g_string_append_printf(line, "buffer %" G_GINT64_FORMAT, GST_CLOCK_TIME_IS_VALID(pts) ? (gint64)pts : -1);
        for (guint i = 0; i < gst_buffer_n_memory(buf); i++)
            describe_memory(line, gst_buffer_peek_memory(buf, i));
        gpointer state = NULL;
        GstMeta *meta;
        while ((meta = gst_buffer_iterate_meta(buf, &state))) {
            if (strcmp(g_type_name(meta->info->api), "GstVideoMetaAPI"))
                continue;
            const GstVideoMeta *vm = (const GstVideoMeta *)meta;
            g_string_append_printf(line, "\nvideo %" G_GINT64_FORMAT " %d %ux%u",
                                   GST_CLOCK_TIME_IS_VALID(pts) ? (gint64)pts : -1, (int)vm->format,
                                   vm->width, vm->height);
            for (guint p = 0; p < vm->n_planes && p < GST_VIDEO_MAX_PLANES; p++)
                g_string_append_printf(line, " %" G_GSIZE_FORMAT "/%d", vm->offset[p], vm->stride[p]);
        }
    } else if (GST_EVENT_TYPE(GST_PAD_PROBE_INFO_EVENT(info)) == GST_EVENT_CAPS) {
        GstCaps *caps;
        gst_event_parse_caps(GST_PAD_PROBE_INFO_EVENT(info), &caps);
        gchar *text = gst_caps_to_string(caps);
        g_string_append_printf(line, "caps %s", text);
        g_free(text);
    }
    if (line->len) {
        printf("%s\n", line->str);
        fflush(stdout); /* a killed process has printed what it saw */
    }
    g_string_free(line, TRUE);
    return GST_PAD_PROBE_OK;
}

static gboolean add_trace(GstElement *pipeline, const char *spec)
{
    const char *dot = strchr(spec, '.');
    if (!dot || dot == spec || !dot[1]) {
        fprintf(stderr, "vstest-gst-run: --trace wants ELEMENT.PAD, got '%s'\n", spec);
        return FALSE;
    }
    gchar *name = g_strndup(spec, (gsize)(dot - spec));
    GstElement *el = gst_bin_get_by_name(GST_BIN(pipeline), name);
    GstPad *pad = el ? gst_element_get_static_pad(el, dot + 1) : NULL;
    if (pad) {
        gst_pad_add_probe(pad, GST_PAD_PROBE_TYPE_BUFFER | GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM, on_trace,
                          NULL, NULL);
        gst_object_unref(pad);
    } else {
        fprintf(stderr, "vstest-gst-run: no pad '%s'\n", spec);
    }
    if (el)
        gst_object_unref(el);
    g_free(name);
    return pad != NULL;
}

static gboolean on_message(GstBus *bus, GstMessage *msg, gpointer data)
{
    (void)bus;
    Run *run = data;
    switch (GST_MESSAGE_TYPE(msg)) {
    case GST_MESSAGE_EOS:
        run->status = EXIT_EOS;
        g_main_loop_quit(run->loop);
        break;
    case GST_MESSAGE_ERROR: {
        GError *err = NULL;
        gchar *dbg = NULL;
        gst_message_parse_error(msg, &err, &dbg);
        gchar *src = gst_object_get_path_string(GST_MESSAGE_SRC(msg));
        fprintf(stderr, "ERROR from %s: %s\n%s%s", src, err->message, dbg ? dbg : "",
                dbg ? "\n" : "");
        g_free(src);
        g_free(dbg);
        g_error_free(err);
        run->status = EXIT_ERROR;
        g_main_loop_quit(run->loop);
        break;
    }
    case GST_MESSAGE_WARNING: {
        GError *err = NULL;
        gchar *dbg = NULL;
        gst_message_parse_warning(msg, &err, &dbg);
        gchar *src = gst_object_get_path_string(GST_MESSAGE_SRC(msg));
        fprintf(stderr, "WARNING from %s: %s\n%s%s", src, err->message, dbg ? dbg : "",
                dbg ? "\n" : "");
        g_free(src);
        g_free(dbg);
        g_error_free(err);
        break;
    }
    default: break;
    }
    return TRUE;
}

static gboolean on_timeout(gpointer data)
{
    Run *run = data;
    fprintf(stderr, "vstest-gst-run: timed out\n");
    run->status = EXIT_TIMEOUT;
    g_main_loop_quit(run->loop);
    return G_SOURCE_REMOVE;
}

static gboolean on_signal(gpointer data)
{
    Run *run = data;
    if (run->signals++ == 0) {
        fprintf(stderr, "vstest-gst-run: signal: sending EOS\n");
        gst_element_send_event(run->pipeline, gst_event_new_eos());
    } else {
        run->status = EXIT_ERROR;
        g_main_loop_quit(run->loop);
    }
    return G_SOURCE_CONTINUE;
}

static gboolean print_property(GstElement *pipeline, const char *spec);

static gboolean on_snapshot(gpointer data)
{
    Run *run = data;
    for (guint i = 0; i < run->prints->len; i++)
        print_property(run->pipeline, g_ptr_array_index(run->prints, i));
    fflush(stdout);
    return G_SOURCE_CONTINUE;
}

/* NAME.PROP=VALUE, numbers and enums as text, strings unquoted. */
static gboolean print_property(GstElement *pipeline, const char *spec)
{
    const char *dot = strchr(spec, '.');
    if (!dot || dot == spec || !dot[1]) {
        fprintf(stderr, "vstest-gst-run: --print wants ELEMENT.PROPERTY, got '%s'\n", spec);
        return FALSE;
    }
    gchar *name = g_strndup(spec, (gsize)(dot - spec));
    GstElement *el = gst_bin_get_by_name(GST_BIN(pipeline), name);
    gboolean ok = FALSE;
    if (!el) {
        fprintf(stderr, "vstest-gst-run: no element named '%s'\n", name);
    } else {
        GParamSpec *ps = g_object_class_find_property(G_OBJECT_GET_CLASS(el), dot + 1);
        if (!ps || !(ps->flags & G_PARAM_READABLE)) {
            fprintf(stderr, "vstest-gst-run: %s has no readable property '%s'\n", name, dot + 1);
        } else {
            GValue v = G_VALUE_INIT, s = G_VALUE_INIT;
            g_value_init(&v, ps->value_type);
            g_object_get_property(G_OBJECT(el), ps->name, &v);
            g_value_init(&s, G_TYPE_STRING);
            gchar *text = g_value_transform(&v, &s) ? g_value_dup_string(&s)
                                                    : g_strdup_value_contents(&v);
            printf("%s=%s\n", spec, text ? text : "(null)");
            g_free(text);
            g_value_unset(&s);
            g_value_unset(&v);
            ok = TRUE;
        }
        gst_object_unref(el);
    }
    g_free(name);
    return ok;
}

static void usage(void)
{
    fprintf(stderr, "usage: vstest-gst-run [--timeout S] [--print ELEMENT.PROPERTY]... [--time] "
                    "[--trace ELEMENT.PAD] 'PIPELINE DESCRIPTION'\n"
                    "exit: 0 EOS, 1 error, 2 timeout, 3 bad arguments\n");
}

int main(int argc, char **argv)
{
    gst_init(&argc, &argv);
    double timeout_s = 0;
    gboolean print_time = FALSE;
    GPtrArray *prints = g_ptr_array_new();
    const char *description = NULL, *trace = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--timeout") && i + 1 < argc) {
            char *end;
            timeout_s = strtod(argv[++i], &end);
            if (*end || timeout_s < 0) {
                usage();
                return EXIT_USAGE;
            }
        } else if (!strcmp(argv[i], "--print") && i + 1 < argc) {
            g_ptr_array_add(prints, argv[++i]);
        } else if (!strcmp(argv[i], "--trace") && i + 1 < argc && !trace) {
            trace = argv[++i];
        } else if (!strcmp(argv[i], "--time")) {
            print_time = TRUE;
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage();
            return EXIT_EOS;
        } else if (argv[i][0] == '-' && argv[i][1] == '-' && !description) {
            usage();
            return EXIT_USAGE;
        } else if (!description) {
            description = argv[i];
        } else {
            usage();
            return EXIT_USAGE;
        }
    }
    if (!description) {
        usage();
        return EXIT_USAGE;
    }

    GError *err = NULL;
    GstElement *pipeline = gst_parse_launch_full(description, NULL, GST_PARSE_FLAG_FATAL_ERRORS,
                                                 &err);
    if (!pipeline) {
        fprintf(stderr, "vstest-gst-run: bad pipeline: %s\n", err ? err->message : "?");
        g_clear_error(&err);
        return EXIT_USAGE;
    }
    if (!GST_IS_PIPELINE(pipeline)) { /* a single element: put it in a pipeline */
        GstElement *p = gst_pipeline_new(NULL);
        gst_bin_add(GST_BIN(p), pipeline);
        pipeline = p;
    }

    maps = g_array_new(FALSE, FALSE, sizeof(Mapping));
    if (trace && !add_trace(pipeline, trace)) {
        gst_object_unref(pipeline);
        return EXIT_USAGE;
    }
    Run run = {g_main_loop_new(NULL, FALSE), pipeline, EXIT_ERROR, 0, prints};
    GstBus *bus = gst_element_get_bus(pipeline);
    gst_bus_add_watch(bus, on_message, &run);
    gst_object_unref(bus);
    if (timeout_s > 0)
        g_timeout_add((guint)(timeout_s * 1000), on_timeout, &run);
    g_unix_signal_add(SIGINT, on_signal, &run);
    g_unix_signal_add(SIGTERM, on_signal, &run);
    g_unix_signal_add(SIGUSR1, on_snapshot, &run);

    gint64 t0 = g_get_monotonic_time();
    if (gst_element_set_state(pipeline, GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE) {
        /* The element's error message is on the bus: print it. */
        GstBus *b = gst_element_get_bus(pipeline);
        GstMessage *m = gst_bus_pop_filtered(b, GST_MESSAGE_ERROR);
        if (m) {
            on_message(b, m, &run);
            gst_message_unref(m);
        } else {
            fprintf(stderr, "ERROR: the pipeline refused to start\n");
        }
        gst_object_unref(b);
        run.status = EXIT_ERROR;
    } else {
        printf("started\n");
        fflush(stdout);
        g_main_loop_run(run.loop);
    }
    double elapsed = (double)(g_get_monotonic_time() - t0) / 1e6;

    int status = run.status;
    for (guint i = 0; i < prints->len; i++)
        if (!print_property(pipeline, g_ptr_array_index(prints, i)) && status == EXIT_EOS)
            status = EXIT_USAGE;
    if (print_time)
        printf("elapsed=%.6f\n", elapsed);
    fflush(stdout);
    if (status == EXIT_TIMEOUT)
        _exit(EXIT_TIMEOUT); /* a stuck pipeline may never reach NULL: do not wait for it */

    gst_element_set_state(pipeline, GST_STATE_NULL);
    gst_object_unref(pipeline);
    g_main_loop_unref(run.loop);
    g_ptr_array_free(prints, TRUE);
    g_array_free(maps, TRUE);
    return status;
}
