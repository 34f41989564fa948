/* One vs_segment per name and role per process, joined once: a process is one producer peer
 * and one consumer peer of a segment however many elements use it. The creator sizes a class
 * for the frames it will carry and marks the segment to be removed by the last peer to leave
 * it, so a clean shutdown leaves nothing in /dev/shm; a segment made beforehand (varslot
 * create) is left alone. A consumer never creates: it opens the file its producer passed. */
#include "segments.h"

#include "../preload/options.h"

#include <gst/gst.h>
#include <sys/stat.h>
#include <unistd.h>

GST_DEBUG_CATEGORY_EXTERN(gst_varslot_debug);
#define GST_CAT_DEFAULT gst_varslot_debug

static GMutex registry_lock;
static GHashTable *registry; /* key -> GstVarslotSegment (not a ref) */

/* $VARSLOT_SEGMENT, under the shim's naming rule: a name that cannot be what the user meant
 * ("//double" would be the file /double, a relative one a segment per working directory) is
 * warned about and the per-user default taken instead. */
gchar *gst_varslot_default_segment_name(void)
{
    const gchar *env = g_getenv("VARSLOT_SEGMENT");
    const char *why = env && *env ? vsopt_segment_name_problem(env) : NULL;
    if (env && *env && !why)
        return g_strdup(env);
    gchar *dflt = g_strdup_printf("/varslot-gst-%u", (unsigned)getuid());
    if (why)
        GST_WARNING("ignoring VARSLOT_SEGMENT=%s: %s; using %s", env, why, dflt);
    return dflt;
}

/* Read as the preload shim reads its booleans. */
gboolean gst_varslot_default_trust_owner(void)
{
    static const gchar *const yes[] = {"1", "yes", "true", "on"};
    const gchar *v = g_getenv("VARSLOT_TRUST");
    for (gsize i = 0; v && i < G_N_ELEMENTS(yes); i++)
        if (!g_ascii_strcasecmp(v, yes[i]))
            return TRUE;
    return FALSE;
}

/* A small class for everything else, and one sized for the frames: frames of a caps change
 * to a larger size need a new segment (the element says so). */
static gsize creation_classes(gsize frame_size, vs_class_config *classes)
{
    gsize n = 0;
    classes[n++] = (vs_class_config){64u << 10, 64};
    if (frame_size > (64u << 10)) {
        gsize slot = (frame_size + 4095) & ~(gsize)4095;
        classes[n++] = (vs_class_config){(guint32)slot, 32};
    }
    return n;
}

static gboolean same_file(int a, int b)
{
    struct stat sa, sb;
    return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* Opens the segment of that name and joins it; a producer creates it if missing. */
static GstVarslotSegment *open_new(const gchar *key, const gchar *name, gsize frame_size,
                                   gboolean may_create, gboolean trust_owner, GError **error)
{
    GstVarslotSegment *s = g_new0(GstVarslotSegment, 1);
    vs_class_config classes[2];
    vs_segment_options opts = {0};
    opts.classes = classes;
    opts.class_count = creation_classes(frame_size, classes);
    opts.flags = VS_SEGMENT_REMOVE_WHEN_UNUSED;
    int rc;
    gboolean created = FALSE;
    /* The last peer of the segment of that name may be leaving as we come, and remove it
     * under us (we then cannot join it: VS_ESTALE): open again, a new one if need be. */
    for (int attempt = 0;; attempt++) {
        rc = may_create ? vs_segment_create(&s->seg, name, &opts) : VS_EEXIST;
        created = rc == VS_OK;
        if (rc == VS_EEXIST)
            rc = vs_segment_open_flags(&s->seg, name, trust_owner ? VS_OPEN_TRUST_OWNER : 0);
        if (rc == VS_OK && (rc = vs_segment_join(&s->seg, &s->peer)) != VS_OK)
            vs_segment_close(&s->seg);
        if (!may_create || (rc != VS_ENOENT && rc != VS_ESTALE) || attempt == 8)
            break;
    }
    if (rc != VS_OK) {
        g_set_error(error, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_OPEN_READ_WRITE,
                    "varslot segment %s: %s (%s)", name, vs_strerror(rc), vs_last_detail());
        g_free(s);
        return NULL;
    }
    s->refcount = 1;
    s->key = g_strdup(key);
    s->name = g_strdup(name);
    GST_INFO("segment %s %s, peer %u", name, created ? "created" : "opened", s->peer);
    return s;
}

/* The registry's segment of that name and role, or a new one. With file_fd (a consumer's):
 * only that very file, opened, never created; an older segment of the same name stays with
 * those who hold it, and the new one takes its place in the registry. */
static GstVarslotSegment *registry_open(const gchar *name, GstVarslotRole role, gsize frame_size,
                                        int file_fd, gboolean trust_owner, GError **error)
{
    const char *why = name && role == GST_VARSLOT_ROLE_PRODUCER ? vsopt_segment_name_problem(name) : NULL;
    if (why) { /* a consumer's name is the producer's, and only that very file is opened */
        g_set_error(error, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_SETTINGS,
                    "varslot segment name '%s' is refused: %s", name, why);
        return NULL;
    }
    gchar *dflt = name ? NULL : gst_varslot_default_segment_name();
    const gchar *n = name ? name : dflt;
    gchar *key = g_strdup_printf("%s%s %s", role == GST_VARSLOT_ROLE_PRODUCER ? "producer" : "consumer",
                                 trust_owner ? " trusting" : "", n);
    g_mutex_lock(&registry_lock);
    if (!registry)
        registry = g_hash_table_new(g_str_hash, g_str_equal);
    GstVarslotSegment *s = g_hash_table_lookup(registry, key);
    if (s && file_fd >= 0 && !same_file(s->seg.fd, file_fd))
        s = NULL;
    if (s) {
        s->refcount++;
    } else if ((s = open_new(key, n, frame_size, file_fd < 0, trust_owner, error))) {
        if (file_fd >= 0 && !same_file(s->seg.fd, file_fd)) {
            g_set_error(error, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_OPEN_READ_WRITE,
                        "varslot segment %s is not the file the producer passed", n);
            vs_segment_close(&s->seg);
            g_free(s->key);
            g_free(s->name);
            g_clear_pointer(&s, g_free);
        } else {
            g_hash_table_replace(registry, s->key, s);
        }
    }
    g_mutex_unlock(&registry_lock);
    g_free(key);
    g_free(dflt);
    return s;
}

GstVarslotSegment *gst_varslot_segment_open(const gchar *name, GstVarslotRole role,
                                            gsize frame_size, gboolean trust_owner, GError **error)
{
    GstVarslotSegment *s = registry_open(name, role, frame_size, -1, trust_owner, error);
    if (s && frame_size > gst_varslot_segment_largest_slot(s)) {
        g_set_error(error, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_SETTINGS,
                    "varslot segment %s: its largest slot (%u bytes) cannot hold %" G_GSIZE_FORMAT
                    "-byte frames; use another segment name", s->name,
                    gst_varslot_segment_largest_slot(s), frame_size);
        gst_varslot_segment_unref(s);
        return NULL;
    }
    return s;
}

GstVarslotSegment *gst_varslot_segment_open_consumer(const gchar *name, int file_fd,
                                                     gboolean trust_owner, GError **error)
{
    return registry_open(name, GST_VARSLOT_ROLE_CONSUMER, 0, file_fd, trust_owner, error);
}

GstVarslotSegment *gst_varslot_segment_ref(GstVarslotSegment *s)
{
    g_mutex_lock(&registry_lock);
    s->refcount++;
    g_mutex_unlock(&registry_lock);
    return s;
}

void gst_varslot_segment_unref(GstVarslotSegment *s)
{
    g_mutex_lock(&registry_lock);
    gboolean last = --s->refcount == 0;
    if (last && g_hash_table_lookup(registry, s->key) == s) /* else a newer one took the key */
        g_hash_table_remove(registry, s->key);
    g_mutex_unlock(&registry_lock);
    if (!last)
        return;
    GST_INFO("segment %s: peer %u leaves", s->name, s->peer);
    vs_segment_close(&s->seg); /* leaves (our slots go back); the last peer out removes it */
    g_free(s->key);
    g_free(s->name);
    g_free(s);
}

const vs_pool *gst_varslot_segment_pool(GstVarslotSegment *s) { return vs_segment_pool(&s->seg); }

guint32 gst_varslot_segment_largest_slot(GstVarslotSegment *s)
{
    const vs_pool *pool = gst_varslot_segment_pool(s);
    return vs_pool_slot_size(pool, vs_pool_class_count(pool) - 1);
}
