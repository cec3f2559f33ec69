/*
 * transport.c: which transport a config asks for (transport.h).  The
 * config loader allows one of alerts.smtp and alerts.sendmail; smtp is
 * the default.
 */
#include "transport.h"

const struct transport *
transport_for(const struct conf *c)
{
	return c->alerts_sendmail != NULL ? &transport_sendmail :
	    &transport_smtp;
}
