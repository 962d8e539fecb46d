
#define ND_OPT_DESTINATION_LINKADDR 253

#define UDP_PORT_6BED4 25790

/* sixbed4: the compiled-in router below is CMake's default; the interop test sets all of
 * these on the compiler command line instead (test/helpers/stock6bed4.ts), so this one
 * block is guarded.  Nothing else differs from what CMake generates. */
#ifndef SERVER_6BED4_IPV4_TXT
#define SERVER_6BED4_IPV4_TXT			"145.136.0.1"
#define SERVER_6BED4_IPV4_INT32			252183167
#define SERVER_6BED4_IPV4_INT0			145
#define SERVER_6BED4_IPV4_INT1			136
#define SERVER_6BED4_IPV4_INT2			0
#define SERVER_6BED4_IPV4_INT3			1
#define SERVER_6BED4_IPV4_BINSTR		"\x91\x88\x00\x01"

#define SERVER_6BED4_PORT_TXT			"25790"
#define SERVER_6BED4_PORT_BINSTR		"\xbe\x64"

#define SERVER_6BED4_IPV4_PORT_TXT		"145.136.0.1:25790"
#define SERVER_6BED4_PORT_IPV4_ADDRSTR		"\xbe\x64\x91\x88\x00\x01"
#define SERVER_6BED4_PORT_IPV4_MACSTR		"\xbc\x64\x91\x88\x00\x01"
#endif

/* Define LOCAL_OVERRIDES_PORT0 to forcefully detect 6bed4 port 0 as an
 * override to a local address.  This is used when a host uses its own /64
 * and has no other addresses available.
 */
// #define LOCAL_OVERRIDES_PORT0 yes

/* Possibly override the name of the interface from the default "6bed4"
 */
// #define INTERFACE_NAME_6BED4 "6bed4"
